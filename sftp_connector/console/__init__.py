"""The operator console: the connection, its goals, the files on the server, run history, profiles and a
"Run now" button, in a browser, from the same process and store (`sftp-connector console`, or the daemon's
`--console-port`).

Modules: `auth` (who may see and do what), `audit` (who ran and unmasked), `views` (what each page
shows), `jobs` (runs started here), `app` (routes and security headers), `server` (where it listens).
"""

"""Run the command line with `python -m sftp_connector`."""

from sftp_connector.entry import main

main()

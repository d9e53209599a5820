"""sftp-connector: sync a profile store with partners through PGP-encrypted CSV files on SFTP."""

__version__ = "0.4.0.dev5"

"""The server: the wire protocol (protocol.py); the app and the web page come with issue 10."""

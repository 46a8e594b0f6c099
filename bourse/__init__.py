"""Bourse: command line, configuration and launcher."""

#: Release version announced at every handshake; nodes of different releases refuse each other.
RELEASE = "0.1.0"

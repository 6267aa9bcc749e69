"""The email service."""

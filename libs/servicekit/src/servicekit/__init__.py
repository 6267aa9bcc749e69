"""What every service is built from, written once."""

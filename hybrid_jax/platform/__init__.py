"""Optional host tuning that programs opt into at start-up (cpu.py); nothing else imports it."""

"""Proof under stress (issue 8): the whole system, really started, under crashes,
concurrency, hostile input and faulty nodes. Real gunicorn gateways on 127.0.0.1, real
SQLite and PostgreSQL stores, real agents over HTTP; every loop bounded in count and time.
"""

"""The contracts every stage shares: the data models, the S3 key layout, the table schemas (the one
source of the tables' columns), the errors, the settings (the only reader of the environment), the
logging set-up, and the one helper for bounded parallel work (parallel). Pure: no network call.
"""

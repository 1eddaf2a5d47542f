"""The contracts every stage shares: the data models, the S3 key layout, the table schemas (the one
source of the tables' columns), the errors, the settings (the only reader of the environment), the
logging set-up, the one helper for bounded parallel work (parallel), and a Lambda handler's own deadline short of
its timeout (deadline). Pure: no network call.
"""

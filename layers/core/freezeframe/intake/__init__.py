"""Alert intake: authentication, one source module per webhook format (PagerDuty, Alertmanager, manual),
the routing rules, the freeze window's math, the incident record and the PagerDuty post-back.
"""

"""Request orchestration: the order of the stages, the gates, enrolment rules and the audit trail.

Knows neither HTTP nor Ray: the stages and the gallery come in as `ports`, answers leave as
`results`, refusals as `errors`. `ufme_ray.serving` adapts Ray handles to the ports and maps the
results and errors to HTTP.
"""

"""What a subject id may be: letters and digits first, then up to 127 of [A-Za-z0-9._:@-].

Ids travel in URL paths, storage keys and audit records, so the rule is the gallery's, not the API's.
"""

SUBJECT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@_-]{0,127}$"

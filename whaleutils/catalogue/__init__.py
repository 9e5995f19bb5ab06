"""A researcher's catalogue: matching new photos (``identify``), the review page
(``review``) and enrolment as a transaction (``enrolment``).
"""

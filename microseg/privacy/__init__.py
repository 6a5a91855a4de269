"""Privacy: consent by purpose (consent.py), erasure everywhere (erase.py, with tombstones.py
and keys.py for the identifiers it must refuse later) and the privacy report (report.py)."""

from microseg.privacy.consent import ConsentPolicy, consent_policy

__all__ = ["ConsentPolicy", "consent_policy"]

"""The fleet tier: sidecars ship their audit records to a collector that keeps them in PostgreSQL.

``schema`` derives the central tables from the audit record and migrates them; ``store`` reads
them (the audit commands' ``--store``); ``ingest`` checks and writes a batch; ``collector`` is
``gateway collect``; ``shipper`` runs in every sidecar; ``ocsf`` maps records to OCSF events.
"""

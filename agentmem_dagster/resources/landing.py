import dagster as dg


class LandingZone(dg.ConfigurableResource):
    """Where raw memories land: `<path>/<YYYY-MM-DD>/*.jsonl[.gz]`."""

    path: str

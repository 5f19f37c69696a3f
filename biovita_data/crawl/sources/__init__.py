"""One module per service; each turns its responses into raw rows (crawl.fetch runs them)."""

# The host policy (crawl.http.DEFAULT_POLICIES) that a source's media downloads go through;
# a source not named here (the release table's URLs) is limited per host.
MEDIA_POLICIES = {
    "xeno-canto": "xeno-canto",
    "inaturalist": "inat-static",
    "inat-open-data": "inat-open-data",
    "gbif": "gbif-media",
}

"""The crawl: sources, the HTTP client, --taxa resolution, licences, and the fetch stage."""

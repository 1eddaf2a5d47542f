"""Alert sources: one module per webhook format, each a pure parse from payload to FreezeRequests."""

"""The Varlink transport: a small asyncio server core that speaks the protocol as sd-varlink does."""

"""Test helpers: raw WebSocket and HTTP servers that send the bad bytes, and thread checks."""

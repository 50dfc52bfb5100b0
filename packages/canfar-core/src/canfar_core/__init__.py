"""canfar-core: one client and one truth about CANFAR headless sessions."""

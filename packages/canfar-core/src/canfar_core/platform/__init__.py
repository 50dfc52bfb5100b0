"""The embedded CANFAR platform: a Skaha v1 server that runs sessions as local processes."""

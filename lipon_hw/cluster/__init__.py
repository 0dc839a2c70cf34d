"""Campaigns on a Dask cluster (extra `lipon-hw[cluster]`): a cell test's channels in
shards, each a long-lived task with its own simulated clock (`shards`, `campaign`), and
a sweep's runs (`sweep`), on a `distributed.LocalCluster` or a scheduler's address
(`connect`). Without `--cluster` nothing here is imported: the worker processes of
`celltest.workers` stay the default."""

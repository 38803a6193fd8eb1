"""The Label Studio ML backend that serves MLCD-Seg masks as pre-annotations."""

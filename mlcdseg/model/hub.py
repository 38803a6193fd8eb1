"""The Hugging Face cache: whether a hub model can be loaded without the network."""


def in_hub_cache(repo_id: str, revision: str | None) -> bool:
    """Whether the Hugging Face cache holds config.json of `repo_id` at `revision` (None: main)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)

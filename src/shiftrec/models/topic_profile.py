"""The topic-profile recommender (interest.profiles.TopicProfile) as a registry model: the same
scores, saved and loaded as a verified model folder (models.artifact) and tied to its item map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shiftrec.config import from_dict, to_dict
from shiftrec.errors import ArtifactError, ConfigError, InputError
from shiftrec.interest.profiles import ProfileConfig, TopicProfile
from shiftrec.models.artifact import read_model_folder, save_model_folder, split_fields

WEIGHTS = "model.npz"


class TopicProfileModel(TopicProfile):
    """score(i | history) = sum_t P(i | t) P(t | history) (interest.profiles.TopicProfile).

    Needs `item_topic` ((n_items + 1) topic ids aligned with the split, -1 = none; e.g.
    interest.topics.Topics.aligned(split.item_map)); `topic_names` default to t0, t1, ...;
    keyword options override ProfileConfig fields (its `item_topic` mode is given as
    `item_topic_mode`)."""

    name = "topic_profile"

    def __init__(self, item_topic: np.ndarray | None = None, topic_names: list[str] | None = None,
                 cfg: ProfileConfig | None = None, **overrides: Any) -> None:
        from shiftrec.models.torch_base import apply_overrides

        if item_topic is None:
            raise ConfigError("topic_profile needs item_topic: the topic of every item of the "
                              "split (`shiftrec topics`, then Topics.aligned(split.item_map))")
        if "item_topic_mode" in overrides:  # ProfileConfig.item_topic (the array is item_topic)
            overrides["item_topic"] = overrides.pop("item_topic_mode")
        it = np.asarray(item_topic, np.int64)
        if topic_names is None:
            topic_names = [f"t{i}" for i in range(int(it.max(initial=-1)) + 1)]
        super().__init__(it, list(topic_names),
                         apply_overrides(cfg or ProfileConfig(), overrides, "topic_profile"))
        self.data_fingerprint: str | None = None
        self.item_keys: str | None = None

    def fit(self, split: Any) -> TopicProfileModel:
        super().fit(split)
        f = split_fields(split)
        self.data_fingerprint, self.item_keys = f["data_fingerprint"], f["item_keys_hash"]
        return self

    def save(self, path: str | Path) -> None:
        self.check_fitted()
        arrays = {"item_topic": self.item_topic, "p_item_topic": self.p_item_topic,
                  "prior": self.prior}
        save_model_folder(path, lambda d: np.savez_compressed(d / WEIGHTS, **arrays),
                          model=self.name, n_items=self.n_items, n_topics=self.n_topics,
                          topic_names=self.topic_names, config=to_dict(self.cfg),
                          data_fingerprint=self.data_fingerprint, item_keys_hash=self.item_keys)

    @classmethod
    def load(cls, path: str | Path) -> TopicProfileModel:
        p, man = read_model_folder(path, cls.name)
        try:
            z = np.load(p / WEIGHTS, allow_pickle=False)
            m = cls(z["item_topic"], man["topic_names"],
                    from_dict(ProfileConfig, man.get("config", {}), where=f"{p}: config"))
            m.p_item_topic, m.prior = z["p_item_topic"], z["prior"]
        except (KeyError, OSError, ValueError, InputError) as e:
            raise ArtifactError(f"cannot read the topic profile: {e}", path=p) from None
        if m.p_item_topic.shape != (m.n_topics, m.n_items + 1):
            raise ArtifactError(f"p_item_topic has shape {m.p_item_topic.shape}, expected "
                                f"({m.n_topics}, {m.n_items + 1})", path=p / WEIGHTS)
        m.data_fingerprint, m.item_keys = man.get("data_fingerprint"), man.get("item_keys_hash")
        return m

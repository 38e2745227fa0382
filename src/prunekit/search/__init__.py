"""Search to a target: per-layer sparsities from sensitivity curves (layerwise), per-space
channel ratios (channels), and the adaptive hybrid of the two families (hybrid)."""
from prunekit.search.channels import (
                                      ChannelSearchResult,
                                      channel_curves,
                                      cost_meter,
                                      search_channels,
                                      search_channels_floor,
                                      uniform_ratio,
)
from prunekit.search.hybrid import AdaptiveReport, adaptive_hybrid
from prunekit.search.layerwise import SearchResult, search, search_floor, sensitivity

__all__ = ["AdaptiveReport", "ChannelSearchResult", "SearchResult", "adaptive_hybrid", "channel_curves",
           "cost_meter", "search", "search_channels", "search_channels_floor", "search_floor", "sensitivity",
           "uniform_ratio"]

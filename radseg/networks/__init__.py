"""The network registry: our own networks and builders for MONAI's."""

"""The replay simulator (``ipa replay``): a pipeline served as its profile says, under a load window and an
adaptation policy, in seconds instead of the window's length."""

"""Load forecasting for the adaptation loop: the Twitter trace, IPA's windows, baseline forecasters and
their evaluation. Every forecaster answers one question: the peak request rate over the coming horizon
(the adaptation interval plus the time a change takes to land), from the recent per-second history."""

"""Time-series forecasting: weekly Mauna Loa CO2 and yearly sunspots (``statsmodels``) or CSV
column(s), a window -> recurrent stack -> linear head predicting the next ``horizon`` steps at once,
MAE/RMSE/MASE against the naive and seasonal-naive baselines, and a forecast plot
(``lstmkit forecast train|evaluate|predict``)."""

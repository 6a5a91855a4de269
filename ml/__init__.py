"""Machine learning: training sets, LightGBM models, MLflow registry and scoring."""

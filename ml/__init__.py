"""Machine learning: training sets, LightGBM models, MLflow registry, scoring (issue: predictive models)."""

"""Inference for every task: post-processing, video association, open-vocabulary fusion, the predictor."""

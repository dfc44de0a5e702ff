"""Ray entry points (preprocess, joint_train, evaluate, ablations, nightly), thin and readable top to bottom.

Each script runs directly (``python omg_platform/pipelines/<name>.py``) and through ``ray job submit``;
run configs live in ``omg_platform/pipelines/configs/``. The library they orchestrate is ``omg``.
"""

"""Ray entry points (preprocess, joint_train, evaluate, ablations, nightly), thin and readable top to bottom.

Each script runs directly (``python pipelines/<name>.py``) and through ``ray job submit``;
run configs live in ``pipelines/configs/``. The library they orchestrate is ``omg``.
"""

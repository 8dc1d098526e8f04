"""The commands of `python -m mmr_jax COMMAND` (mmr_jax/cli.py lists them and starts each one).

Each module holds a command's flags and its `main`, which calls the library; nothing else depends on this
package. Modules import the library inside `main`, after the start-up, so that --help and the allocator relaunch
never import JAX or TensorFlow.
"""

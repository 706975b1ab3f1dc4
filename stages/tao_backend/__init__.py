"""The TAO backends (`tao`, `tao_launcher`, `tao_docker`): TAO's own commands, run for real.

argv.py builds every TAO command line (lists, never shell strings); runners.py runs them through
pipeline/commands.py (the one place that starts external commands), streaming their output to the console and a log file with
the key masked; one module per step turns the stage's inputs into those commands."""

"""The machinery every stage shares: the one config loader (Hydra composition or params.yaml, checked
against a schema), the stage command line, outputs that appear whole or not at all, the one error a
stage reports, the backend switch, the spec as the stages resolve it, and the import reader the `code`
stage fingerprints with. Stage modules build on it; the library packages (spec, formats, detectnet_v2)
never import it."""

"""The TAO spec model: a lossless parser of protobuf's text format (comments, order and layout kept),
field paths, substitution of container paths by field, and the checks of what a backend reads. It
imports nothing else of the project; `python -m stages.spec` is its command line."""
from .paths import (CONTAINER_PREFIXES, PATH_FIELDS, PathField, Problem, SpecCheckError, check,
                    parse_mapping, path_values, substitute)
from .textformat import Spec, SpecPathError, SpecSyntaxError, quote_string

__all__ = ["CONTAINER_PREFIXES", "PATH_FIELDS", "PathField", "Problem", "Spec", "SpecCheckError",
           "SpecPathError", "SpecSyntaxError", "check", "parse_mapping", "path_values",
           "quote_string", "substitute"]

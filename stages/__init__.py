"""DVC stage entry points for the TAO DetectNet_v2 deployment pipeline, and the modules they share."""

"""TAO backends (tao, tao_launcher, tao_docker): not built yet."""

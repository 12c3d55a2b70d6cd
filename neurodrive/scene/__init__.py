"""What a reconstructed scene stores (meshes, texels, decoder, sky, actor assets) and how it is read and written."""

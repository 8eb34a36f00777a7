"""Text reading: the horizontal text blocks of a layer, with words, boxes, size, colour, alignment and font."""

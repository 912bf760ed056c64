"""A stock Flower App with the soteria-book's client mod and curious server dropped in."""

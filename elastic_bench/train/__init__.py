"""Training and evaluation of any backend inside the recommender shell."""

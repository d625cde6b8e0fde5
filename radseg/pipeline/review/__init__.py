"""``radseg review``: browser pages to review predictions against the truth on their scans."""

from radseg.pipeline.review.review_folder import ReviewResult, review_folder
from radseg.pipeline.review.serve import make_server

__all__ = ["ReviewResult", "make_server", "review_folder"]

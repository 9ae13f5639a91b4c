"""Growth: analytics events, referrals, the usage and admin overviews."""

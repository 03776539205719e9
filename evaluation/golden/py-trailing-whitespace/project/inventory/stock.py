def reorder_level(daily_use, lead_days):   
	return daily_use * lead_days

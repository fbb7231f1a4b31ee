"""Interest migration: item topics, decayed interest profiles, per-user shift detection,
platform migration flows, shifted/stable evaluation slices and plain-English explanations."""

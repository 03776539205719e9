from slugger import slug

for title in ("Getting Started", "Backups & Restore"):
    print(f"{slug(title)}.html")

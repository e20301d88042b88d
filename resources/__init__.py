"""Icons, the .desktop file and sample images, installed as the olsdesk.resources package."""

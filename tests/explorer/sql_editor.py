"""Driving the SQL page's editor (Ace, inside the component's iframe) as a user does, for the browser tests."""

from playwright.sync_api import FrameLocator, Page


def editor(page: Page) -> FrameLocator:
    return page.frame_locator('iframe[title="code_editor.code_editor"]')


def write_sql(page: Page, sql: str) -> None:
    """Replace the editor's text. Inserted as one input, so Ace's auto-closed brackets and its
    completion popup (which takes Enter) do not change what is written."""
    box = editor(page).locator("#REACT_ACE_EDITOR .ace_content")
    box.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(sql)


def run_sql(page: Page) -> None:
    """Ctrl+Enter in the editor: it sends its text and the page runs it."""
    editor(page).locator("#REACT_ACE_EDITOR textarea.ace_text-input").press("Control+Enter")


def leave_editor(page: Page) -> None:
    """Focus out of the editor (it then sends its text, to be checked), as a click on the page does."""
    page.get_by_role("heading", name="SQL", exact=True).click()

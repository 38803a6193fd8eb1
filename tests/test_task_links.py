"""Links to a task in Label Studio's Data Manager."""

from mlcdseg.labelstudio.task_links import task_url


def test_a_task_link_opens_the_task_in_its_projects_data_manager():
    assert task_url("http://localhost:8080", 3, 17) == "http://localhost:8080/projects/3/data?task=17"
    assert task_url("https://ls.example/", 3, 17) == "https://ls.example/projects/3/data?task=17"


def test_no_link_without_a_url_or_with_ids_label_studio_did_not_write():
    assert task_url(None, 3, 17) is None and task_url("", 3, 17) is None
    assert task_url("http://ls", None, 17) is None and task_url("http://ls", 3, "17&x=1") is None
    assert task_url("http://ls", True, 17) is None and task_url("http://ls", 3, -1) is None

"""The package against a local image server started by tests/python_pkg.rs: OPI_TEST_URL
answers like an image API; under OPI_TEST_URL + "err/" it answers 401 with an API error."""

import os

import pytest

import opi_openai

URL = os.environ["OPI_TEST_URL"]


def test_get_images_returns_the_server_json_as_a_dict():
    result = opi_openai.get_images(URL, "sk-python", "dall-e-3",
                                   {"prompt": "Python alpaca", "n": 2})
    assert len(result["data"]) == 2
    assert result["data"][0]["revised_prompt"] == "Python alpaca"
    assert result["data"][0]["b64_json"]


def test_descriptions_take_the_three_forms_and_headers_options_are_accepted():
    by_text = opi_openai.get_images(URL, None, "", "{'prompt':'Quoted alpaca','n':1}",
                                    headers={"X-Client": "pytest"}, options={"timeout": 30})
    assert by_text["data"][0]["revised_prompt"] == "Quoted alpaca"
    descr = opi_openai.get_image_description_structure("Built alpaca", 1, None, "256x256")
    assert descr == {"prompt": "Built alpaca", "n": 1, "size": "256x256"}
    assert opi_openai.get_images(URL, "t", "m", descr)["data"][0]["revised_prompt"] == "Built alpaca"


def test_an_api_error_raises_opi_error_with_its_fields():
    with pytest.raises(opi_openai.OpiError) as caught:
        opi_openai.get_images(URL + "err/", "sk-wrong", "dall-e-3", {"prompt": "x"})
    error = caught.value
    assert error.code == "invalid_api_key"
    assert error.type == "invalid_request_error"
    assert error.param is None
    assert "Incorrect API key" in error.message


def test_a_local_failure_raises_opi_error_naming_the_argument():
    with pytest.raises(opi_openai.OpiError) as caught:
        opi_openai.get_images(URL, "t", "m", "not json at all")
    assert caught.value.code == "invalid_argument"
    assert caught.value.param == "descr"
    assert caught.value.type == "opi_client_error"


def test_a_bad_option_raises_opi_error_for_options():
    with pytest.raises(opi_openai.OpiError) as caught:
        opi_openai.get_images(URL, "t", "m", {"prompt": "x"}, options={"no_such_key": 1})
    assert caught.value.param == "options"


def test_the_library_is_the_one_named_and_has_a_version():
    assert opi_openai.library_path() == os.environ["OPI_OPENAI_LIB"]
    assert opi_openai.version() == os.environ["OPI_EXPECTED_VERSION"]


def test_wrong_argument_types_are_refused_before_the_call():
    with pytest.raises(TypeError):
        opi_openai.get_images(URL, "t", "m", 42)

// OPI_OpenAI in 1C:Enterprise: generate an image and save it to a file.
//
// OPI_OpenAI.zip comes from examples/1c/package.sh (or put it in a common template and pass
// the template's navigation link instead of a path).
// Example: GenerateImage("/opt/addins/OPI_OpenAI.zip", "https://api.openai.com/", Token, "/tmp/alpaca.png");

// Attaches the add-in (once per session; attaching again is harmless) and creates its object.
Function NewOPIOpenAI(ZipPath) Export
	If Not AttachAddIn(ZipPath, "OPI_OpenAI", AddInType.Native) Then
		Raise "Could not attach the OPI_OpenAI add-in from " + ZipPath;
	EndIf;
	Return New("AddIn.OPI_OpenAI.Main");
EndFunction

// Generates one 1024x1024 image of a yellow alpaca and writes it to ImagePath.
Procedure GenerateImage(ZipPath, URL, Token, ImagePath) Export
	Client = NewOPIOpenAI(ZipPath);

	// Call options, applied to every later call of this object (see README: timeout,
	// connect_timeout, retries, max_response_mb).
	Client.Options = "{""timeout"": 600, ""retries"": 3}";

	// Prompt, Count, Background (left out), Size, AdditionalParameters: a JSON string.
	Description = Client.GetImageDescriptionStructure("Yellow alpaca", 1, , "1024x1024",
		"{""quality"": ""medium""}");

	// Called as a statement, GetImages leaves its JSON in LastResult (BinaryData): base64
	// images are megabytes, and 1C in isolated mode on Linux cannot pass strings over ~30 KB.
	// (Result = Client.GetImages(...) returns the same JSON as a String.)
	Client.GetImages(URL, Token, "gpt-image-1.5", Description);
	ResultText = GetStringFromBinaryData(Client.LastResult, TextEncoding.UTF8);

	JSONReader = New JSONReader;
	JSONReader.SetString(ResultText);
	Result = ReadJSON(JSONReader, True); // a Map
	JSONReader.Close();

	// One key tells success from failure: the server's errors and the add-in's own
	// (type "opi_client_error", with code and param) both come as "error".
	Error = Result.Get("error");
	If Error <> Undefined Then
		If TypeOf(Error) = Type("Map") Then
			Raise "GetImages failed: " + Error.Get("message");
		EndIf;
		Raise "GetImages failed: " + String(Error);
	EndIf;

	Image = Result.Get("data")[0];
	Base64 = Image.Get("b64_json");
	If Base64 = Undefined Then
		Raise "The server answered with a link, not b64_json: " + Image.Get("url");
	EndIf;
	Base64Value(Base64).Write(ImagePath);
	Message("Saved " + ImagePath + ". Revised prompt: " + Image.Get("revised_prompt"));
EndProcedure
